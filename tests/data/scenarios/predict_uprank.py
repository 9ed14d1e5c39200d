"""tensorflow/tensorflow#55573, as its reporter would write it (a plain script, for `--script`):
`model.predict` upranked 1-D input to (N, 1) before TF 2.7, and the change came with keras 2.7.0.
Exit 0: the old behaviour; AssertionError: the new one."""
import numpy as np
import tensorflow as tf

model = tf.keras.Sequential([tf.keras.layers.Lambda(lambda x: x * 2.0)])
out = model.predict(np.arange(8.0))
assert out.shape == (8, 1), "predict no longer upranks 1-D input: %s" % (out.shape,)
