"""Run directories from the outside: follow them while they are written, start and stop them."""
