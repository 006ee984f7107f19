"""Full-size component configurations of ``stabilityai/stable-diffusion-2-1-unclip`` (the "h" variant).

For building the architectures with random weights when the weights cannot be downloaded (the dry run, the
meta-device parameter counts). Reconstructed from the public model configuration and from diffusers' conversion
code (``diffusers/pipelines/stable_diffusion/convert_from_ckpt.py``). The fields in ``UNCERTAIN`` were not
confirmed against the published files: once the weights are downloaded, the downloaded ``config.json`` wins.
"""

from __future__ import annotations

UNCERTAIN = (
    'unet.upcast_attention', 'scheduler.timestep_spacing','scheduler.steps_offset', 'text_encoder.projection_dim',
)

CONFIGS = {'unet': {'_class_name': 'UNet2DConditionModel',
          'sample_size': 96,
          'in_channels': 4,
          'out_channels': 4,
          'flip_sin_to_cos': True,
          'freq_shift': 0,
          'down_block_types': ['CrossAttnDownBlock2D',
                               'CrossAttnDownBlock2D',
                               'CrossAttnDownBlock2D',
                               'DownBlock2D'],
          'up_block_types': ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
          'block_out_channels': [320, 640, 1280, 1280],
          'layers_per_block': 2,
          'attention_head_dim': [5, 10, 20, 20],
          'cross_attention_dim': 1024,
          'use_linear_projection': True,
          'upcast_attention': True,
          'norm_num_groups': 32,
          'norm_eps': 1e-05,
          'act_fn': 'silu',
          'class_embed_type': 'projection',
          'projection_class_embeddings_input_dim': 2048},
 'vae': {'_class_name': 'AutoencoderKL',
         'in_channels': 3,
         'out_channels': 3,
         'latent_channels': 4,
         'layers_per_block': 2,
         'sample_size': 768,
         'down_block_types': ['DownEncoderBlock2D',
                              'DownEncoderBlock2D',
                              'DownEncoderBlock2D',
                              'DownEncoderBlock2D'],
         'up_block_types': ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
         'block_out_channels': [128, 256, 512, 512],
         'norm_num_groups': 32,
         'act_fn': 'silu',
         'scaling_factor': 0.18215},
 'text_encoder': {'_class_name': 'CLIPTextModel',
                  'hidden_size': 1024,
                  'intermediate_size': 4096,
                  'num_hidden_layers': 23,
                  'num_attention_heads': 16,
                  'max_position_embeddings': 77,
                  'vocab_size': 49408,
                  'hidden_act': 'gelu',
                  'projection_dim': 512},
 'image_encoder': {'_class_name': 'CLIPVisionModelWithProjection',
                   'hidden_size': 1280,
                   'intermediate_size': 5120,
                   'num_hidden_layers': 32,
                   'num_attention_heads': 16,
                   'image_size': 224,
                   'patch_size': 14,
                   'projection_dim': 1024,
                   'hidden_act': 'gelu'},
 'image_normalizer': {'_class_name': 'StableUnCLIPImageNormalizer', 'embedding_dim': 1024},
 'image_noising_scheduler': {'_class_name': 'DDPMScheduler',
                             'num_train_timesteps': 1000,
                             'beta_schedule': 'squaredcos_cap_v2'},
 'scheduler': {'_class_name': 'DDIMScheduler',
               'num_train_timesteps': 1000,
               'beta_start': 0.00085,
               'beta_end': 0.012,
               'beta_schedule': 'scaled_linear',
               'prediction_type': 'v_prediction',
               'clip_sample': False,
               'set_alpha_to_one': False,
               'steps_offset': 1,
               'timestep_spacing': 'leading'},
 'feature_extractor': {'_class_name': 'CLIPImageProcessor', 'crop_size': 224, 'size': 224},
 'pipeline': {'_class_name': 'StableUnCLIPImg2ImgPipeline', 'native_resolution': 768, 'latent_size': 96}}

# Parameter counts (millions) of the full-size components, built on the meta device (diffusers 0.42.1,
# transformers 5.24): what the dry run must reproduce.
PARAMS_M = {"unet": 870.2, "vae": 83.7, "text_encoder": 340.4, "image_encoder": 632.1}
