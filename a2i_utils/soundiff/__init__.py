"""Part 5 of the course (notebook 05): SounDiff, the U-Net of Stable Diffusion 2.1 UnCLIP fine-tuned on sounds.

- ``reference``: the full-size component configurations of ``stabilityai/stable-diffusion-2-1-unclip``;
- ``pipeline``: loading the pipeline (full: Stability's weights; demo: the miniature; dry run: random full size),
  with a weightless image-encoder stand-in;
- ``mini``: the miniature UnCLIP that demo mode pretrains (VAE, offline tokenizer + text encoder, normaliser
  statistics, a U-Net trained on the miniature ImageBind's vision embeddings);
- ``conditioning``: ``class_labels`` exactly as the pipeline builds them, and the dropped condition;
- ``training``: fine-tuning on (audio embedding, image latent) pairs with accelerate: checkpoints, resume, LoRA;
- ``generate``: recordings -> images for any model, prompt, seed and guidance;
- ``cli``: ``a2i train soundiff`` and ``a2i pretrain mini-unclip``; ``figures``: the pictures of notebook 05.
"""
