"""Read models: the identity projection (profiles, identity graph) and its storage ports."""
