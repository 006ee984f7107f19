"""Parts 2 and 3 of the course (notebooks 02 and 03): the pixel transformer trained from scratch.

- ``features``: FFT features of a recording, 500 sections x 220 frequency bins, cached and normalised;
- ``model``: the encoder-decoder with local 1D self-attention that paints an image pixel by pixel;
- ``training``: next-pixel training with exact resume, bits per dimension, train-or-load;
- ``figures``: pictures of the attention masks.
"""
