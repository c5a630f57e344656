"""TideMQ client package."""
