#!/usr/bin/env python3
"""Write a tiny llama GGUF for tests and the quickstart (random weights, ~0.3 MB).

2 layers, 64-dim, byte-fallback SPM vocab (<unk>, <s>, </s>, <0x00>..<0xFF>), a ChatML
chat template. The weights are random but shaped so that the model only ever emits
printable ASCII and never emits </s>: one residual dimension is held constant by the
embeddings (and left untouched by every layer), and the output rows of unwanted tokens
weigh it strongly negative. Streams therefore always run to max_tokens, which keeps
tests deterministic in length without relying on `ignore_eos`.

Usage: make-tiny-model.py OUT.gguf [--seed N] [--dim 64] [--layers 2] [--ctx 2048]

The defaults make the ~0.3 MB test model. The prefill-bound benchmark model
(scripts/bench-cache.sh) is `--dim 256 --layers 6 --ctx 8192` (~13 MB): a 1,600-token
prefill takes about 0.4 s on one CPU core, a cached one a few tens of ms.
"""
import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - the scripts install it
    sys.exit("make-tiny-model.py needs PyPI's gguf package: pip install gguf numpy")

N_HEAD = 4
ANCHOR = 0  # the residual dimension kept constant


def vocab():
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    scores = [0.0] * len(tokens)
    return tokens, scores, types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--dim", type=int, default=64, help="embedding width (a multiple of 4)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="trained context length")
    args = ap.parse_args()
    global N_EMBD, N_LAYER, N_FF, N_CTX
    N_EMBD, N_LAYER, N_CTX = args.dim, args.layers, args.ctx
    N_FF = 2 * N_EMBD
    rng = np.random.default_rng(args.seed)
    tokens, scores, types = vocab()
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("caravan-tiny")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def mat(rows, cols, std=0.5):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float16)

    embd = rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    embd[:, ANCHOR] = 4.0
    w.add_tensor("token_embd.weight", embd.astype(np.float16))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(N_EMBD, N_EMBD))
        w.add_tensor(p + "attn_k.weight", mat(N_EMBD, N_EMBD))
        w.add_tensor(p + "attn_v.weight", mat(N_EMBD, N_EMBD))
        out = mat(N_EMBD, N_EMBD, 0.1)
        out[ANCHOR, :] = 0  # layers never move the anchor dimension
        w.add_tensor(p + "attn_output.weight", out)
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", mat(N_FF, N_EMBD))
        down = mat(N_EMBD, N_FF, 0.1)
        down[ANCHOR, :] = 0
        w.add_tensor(p + "ffn_down.weight", down)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    head = mat(n_vocab, N_EMBD, 1.0).astype(np.float32)
    head[:, ANCHOR] = 0
    printable = {3 + b for b in range(0x20, 0x7F)}
    for t in range(n_vocab):
        if t not in printable:
            head[t, ANCHOR] = -2000.0  # dominates any logit the random layers produce: never sampled
    w.add_tensor("output.weight", head.astype(np.float16))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
