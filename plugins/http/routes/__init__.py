"""The routes of the HTTP API, one blueprint per resource."""
