"""Pure, synchronous audio kernels (numpy): G.711 tables, streaming resampler, playout clock."""
