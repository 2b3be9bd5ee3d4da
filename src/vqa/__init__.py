"""VQA-Keras: the FloydHub visual-question-answering tutorial, in Keras 3.

Importing ``vqa`` is cheap: TensorFlow, Keras and spaCy are imported only by the
stage that needs them.
"""

__version__ = "0.1.0"
