"""Part 4 of the course (notebook 04): ImageBind embeddings of sounds and images.

- ``preprocess``: ImageBind's audio, image and text inputs, from our own readers;
- ``model``: :class:`Embedder`, the interface both models are used through;
- ``embedder``: the loader above the models (:func:`load_imagebind`), picking huge, mini or a random huge;
- ``huge``: the official ``imagebind_huge`` checkpoint: download, verification, loading (full mode);
- ``mini``: the miniature ImageBind that our code trains (demo mode);
- ``cache``: the per-file embedding cache and the audio scale handed to the U-Net;
- ``retrieval``: retrieval recall and scene accuracy from audio;
- ``cli``: ``a2i embed``.
"""
