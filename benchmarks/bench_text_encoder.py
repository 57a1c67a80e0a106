"""Sentences/s of the Flax MiniLM encoder next to sentence-transformers (torch), same run.

Usage (CPU; the torch side needs the ``test`` extra)::

  .venv/bin/python benchmarks/bench_text_encoder.py --num=2000 --batch_size=64

Both encoders get the same sentences and batch size, both sort by length and pad per
batch (ours to bucket lengths). The sentences are generated item descriptions
(title, year, genres, tags, a plot of 0-60 words drawn from a fixed word list, seed 0),
shaped like what ``mmrec_jax.features`` builds from items.jsonl -- not real item text.
Compile time of the Flax side (one program per bucket) is reported separately: the
timed pass runs after a warm-up pass over the same sentences. Prints Markdown rows.
"""

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

WORDS = (
  "love war city night family secret journey young old man woman detective "
  "ship space future past dream friend enemy king queen music school crime "
  "money power island river mountain storm fire island robot island home road "
  "escape revenge heart truth lie game hunter killer child father mother"
).split()
GENRES = [
  "Action",
  "Comedy",
  "Drama",
  "Thriller",
  "Romance",
  "Sci-Fi",
  "Horror",
  "Animation",
  "Documentary",
  "Crime",
  "War",
  "Western",
]


def sentences(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    title = " ".join(rng.choice(WORDS, rng.integers(1, 5))).title()
    genres = ", ".join(rng.choice(GENRES, rng.integers(1, 4), replace=False))
    plot = " ".join(rng.choice(WORDS, rng.integers(0, 61)))
    out.append(f"{title} ({1950 + i % 70}). Genres: {genres}. {plot}".strip())
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--num", type=int, default=2000)
  ap.add_argument("--batch_size", type=int, default=64)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--skip_torch", action="store_true")
  args = ap.parse_args()
  texts = sentences(args.num)

  import jax

  from mmrec_jax.features import text_encoder

  t0 = time.perf_counter()
  enc = text_encoder.SentenceEncoder.from_pretrained(batch_size=args.batch_size, dtype=args.dtype)
  load_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  ours = enc.encode(texts)  # warm-up: compiles one program per bucket used
  warm_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  ours = enc.encode(texts)
  ours_s = time.perf_counter() - t0
  dev = jax.devices()[0]
  rows = [
    (
      "mmrec_jax Flax MiniLM (" + args.dtype + ")",
      f"{dev.platform}:{dev.device_kind} x{len(jax.devices())}",
      ours_s,
      f"load {load_s:.1f} s, first pass incl. compile {warm_s:.1f} s",
    )
  ]

  if not args.skip_torch:
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(text_encoder.minilm_dir()), device="cpu")
    st.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    t0 = time.perf_counter()
    ref = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    st_s = time.perf_counter() - t0
    rows.append(
      (
        f"sentence-transformers (torch {torch.__version__})",
        f"cpu, {torch.get_num_threads()} threads",
        st_s,
        "",
      )
    )
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"cosine(ours, sentence-transformers): min {cos.min():.6f}, mean {cos.mean():.6f}")

  print(f"\n{args.num} sentences, batch {args.batch_size}, max_length {enc.max_length}\n")
  print("| encoder | device | time (s) | sentences/s | notes |")
  print("|---|---|---|---|---|")
  for name, device, sec, note in rows:
    print(f"| {name} | {device} | {sec:.2f} | {args.num / sec:.0f} | {note} |")


if __name__ == "__main__":
  main()
