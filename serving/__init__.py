"""The VQA serving job: a Flask app over ``vqa.predict`` (see serving/README.md)."""
