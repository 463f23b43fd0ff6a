#!/usr/bin/env python3
"""Writes a random-weight Hugging Face directory of SmolLM2-135M's shape (bf16 safetensors),
on the GPU machine, so decode timings need no checkpoint upload: kernel and GEMM times do not
depend on the weights' values.   usage: make_random_smol.py OUT_DIR"""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

cfg = LlamaConfig(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=65536,
    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
)
torch.manual_seed(0)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(sys.argv[1], safe_serialization=True)
