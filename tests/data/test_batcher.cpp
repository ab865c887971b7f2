// Batcher: written next.
