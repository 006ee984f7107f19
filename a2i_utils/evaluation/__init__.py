"""Part 6 of the course (notebook 06): measuring generated images.

- ``scene_classifier``: a small CNN trained on the synthetic training images (its own held-out accuracy
  stated), which decides whether a generated image shows its recording's scene;
- ``aic``: the share of images classified into the recording's scene, per recording, with bootstrap intervals.
"""
