"""Benchmarks of tafe-tf: comparison grids, speed, profiles, FLOPs, DeepCTR peer.

Installed as ``tafe_tf.benchmarks`` (from the repository's ``benchmarks/``);
the library under ``tafe_tf/`` never imports it. The absl entry points that
run these are ``launch/benchmark*.py``.
"""
