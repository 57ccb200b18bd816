"""Model layer: loading, tuning methods, tokenised data. Imports torch/transformers/peft,
never Ray, and is never imported by `import kgc`."""
