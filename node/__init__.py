"""TideMQ node package."""
