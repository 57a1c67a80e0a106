"""Item feature extraction: every modality computed from items.jsonl or pretrained models.

Results are written as feature shards (:mod:`mmrec_jax.data.feature_store`). Submodules
are imported on use so ``import mmrec_jax.features`` needs neither jax nor the optional
extra ``mmrec_jax[text]`` (``tokenizers``, Pillow): handcrafted (TF-IDF/genre/year 'text',
written by preparation), side_graph (the 'graph' modality from shared tags/genres),
text_encoder (sentence encoders: BERT/MiniLM, and through it mpnet and clip_text, on the
layers of transformer), image_encoder (ViT/CLIP), loading (safetensors -> NNX), minilm
(where the default MiniLM weights come from), auto (``data.text_features``), extract
(:func:`extract_features` and the command ``python -m mmrec_jax.features``), importer
(``python -m mmrec_jax.features import``: vectors computed elsewhere, e.g. by Ducho).
"""

from mmrec_jax.features.extract import ENCODERS, extract_features, item_text

__all__ = ["ENCODERS", "extract_features", "item_text"]
