"""Small utilities that know nothing of the models: image transforms, pictures, atomic writes, output
locks, progress bars, hardware flags and memory measurement."""
