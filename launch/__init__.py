"""absl entry points: train, convert, evaluate, export, benchmarks.

Installed as ``tafe_tf.launch`` (from the repository's ``launch/``) with
console scripts (``tafe-train``, ...); ``python -m launch.train`` works in the
repository.
"""
