"""Optional plugins behind extras; never loaded unless enabled."""
