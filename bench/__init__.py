"""Benchmarks of VQA-Keras and their shared harness (bench.harness); run each as ``python -m bench.NAME``."""
