"""What every layer above the model runs on: devices and precisions, image normalisation, CUDA graphs, bounded
caches, sizes, output paths, timestamps and the bundled files. Nothing here knows about stages or commands."""
