"""Datasets: real-data importers (CelebA, UTKFace), the offline benchmark renderer, and image loading."""
