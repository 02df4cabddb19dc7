"""Data: the synthetic generator, raw-format converters, vocabularies, TFDS builders.

Installed as ``tafe_tf.data`` (from the repository's ``data/``).
"""
