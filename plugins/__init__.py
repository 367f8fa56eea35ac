"""Built-in plugins, each registered through an entry point like a third-party one."""
