"""Pretrained item feature extraction (optional extra ``mmrec_jax[text]``).

Submodules are imported on use so ``import mmrec_jax.features`` needs neither
``tokenizers`` nor Pillow: text_encoder (BERT/MiniLM), image_encoder (ViT/CLIP),
loading (safetensors -> NNX), minilm (where the default MiniLM weights come from),
auto (``data.text_features``), extract (:func:`extract_features` and the command
``python -m mmrec_jax.features``).
"""

from mmrec_jax.features.extract import ENCODERS, extract_features, item_text

__all__ = ["ENCODERS", "extract_features", "item_text"]
