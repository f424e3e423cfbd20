"""Running distillations: config, jobs (train-teacher, distill, demo), callbacks, distribution, precision, teacher cache.

These modules need TensorFlow for tf.data and tf.distribute; `import kdistill`
does not import them, `from kdistill.run import jobs` does.
"""
