"""Part 6 of the course (notebook 06): comparing and measuring the generated images.

- ``scene_classifier``: a small CNN trained on the synthetic training images (its own held-out accuracy
  stated), which decides whether a generated image shows its recording's scene (demo mode's judge);
- ``aic``: the share of images classified into the recording's scene, per recording, with bootstrap intervals;
- ``metrics``: AIS, IIS, AIC and FD/KD (torchmetrics) with bootstrap intervals over recordings;
- ``inception``: full mode's FID Inception weights, downloaded once into the cache and hash-checked;
- ``systems``: the systems compared (zero-shot baseline, SounDiff-L/-S, with and without the prompt, the pixel
  transformer), loaded or trained through their parts of the course;
- ``evaluate``: one evaluation run over all systems; ``report``: the table, the chart and the verdicts;
- ``rerank``: best-of-N by ImageBind audio-image similarity, against N independent samples;
- ``grid``: the paper's Table 1 as a figure; ``panel``: the interactive ipywidgets panel;
- ``cli``: ``a2i generate`` and ``a2i evaluate``.
"""

# The named systems and the SounDiff variant each is (None: the pretrained baseline). Here, not in ``systems``,
# so that the CLI can list them without importing torch (``a2i --help`` stays instant).
NAMED = {"baseline": None, "soundiff-l": "L", "soundiff-s": "S"}
