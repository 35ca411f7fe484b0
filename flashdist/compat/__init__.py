"""One module per dependency for everything flashdist takes from its private internals (see DESIGN.md)."""
