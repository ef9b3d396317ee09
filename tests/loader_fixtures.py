"""The small curriculum the loader tests blend (three phases over two mixes of sources a, b, c),
shared by the tests of the store, the epochs report and training."""

RECIPE = """\
name: loader-test
tokenizer: t
model: m
global_batch_tokens: 512
seed: 7
schedule:
  type: wsd
  peak_lr: 1.0e-3
  warmup_steps: 2
  decay_start_step: 9
  decay_steps: 4
phases:
  - name: one
    stage: 1
    mix: one.yaml
    steps: 6
    sequence_length: 32
    rope_theta: 10000
  - name: two
    stage: 2
    mix: two.yaml
    steps: 6
    sequence_length: 32
    rope_theta: 10000
  - name: long
    run: long
    mix: two.yaml
    steps: 3
    sequence_length: 128
    rope_theta: 100000
    schedule:
      type: cosine
      peak_lr: 1.0e-4
"""

MIX_ONE = """\
weights: relative
sources:
  a: {weight: 0.75, category: web, path: sample://a}
  b: {weight: 0.25, category: code, path: sample://b}
"""

MIX_TWO = """\
weights: relative
sources:
  a: {weight: 0.25, category: web, path: sample://a}
  b: {weight: 0.25, category: code, path: sample://b}
  c: {weight: 0.5, category: math, path: sample://c}
"""
