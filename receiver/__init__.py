"""Installs model archives pushed from Cloud Storage into TensorFlow Serving, atomically."""
