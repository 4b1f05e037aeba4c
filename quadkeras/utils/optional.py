"""Optional packages: whether they can be imported, asked in one place.

TensorFlow is a dependency of the package, but a torch- or jax-only environment (a GPU image,
say) may lack it: the data pipeline then uses NumPy batches and Pillow, and the TensorBoard
callback (which writes through `tensorflow.summary`) is skipped.

Example:

>>> isinstance(tensorflow_available(), bool)
True
"""


def tensorflow_available():
    """True when TensorFlow can be imported (tf.data, TensorBoard logs and export need it)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True
