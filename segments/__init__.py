"""TideMQ segments package."""
