"""sim2real.data package."""
