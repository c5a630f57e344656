"""TideMQ raft package."""
