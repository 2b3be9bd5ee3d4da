"""Every name the stages exchange, in one place: file names, splits, sizes, feature layouts.

Data flows one way: JSON/images -> prepare/features -> HDF5 -> train -> model
directory -> evaluate / ask / serving. The names inside a file (HDF5 datasets and
attributes, JSON keys) are private to the module that owns its format:
`vqa.prepared`, `vqa.feature_file`, `vqa.modeldir`, `vqa.results`.
"""

# The official VQA subtypes ("splits"); test splits carry no annotations.
TRAIN_SPLIT = "train2014"
VAL_SPLIT = "val2014"
TEST_DEV_SPLIT = "test-dev2015"
TEST_SPLIT = "test2015"
SPLITS = (TRAIN_SPLIT, VAL_SPLIT, TEST_DEV_SPLIT, TEST_SPLIT)
ANNOTATED_SPLITS = (TRAIN_SPLIT, VAL_SPLIT)
# `--split val|test-dev|test` on the command line -> the subtype.
SPLIT_ALIASES = {"train": TRAIN_SPLIT, "val": VAL_SPLIT, "test-dev": TEST_DEV_SPLIT, "test": TEST_SPLIT}

# The tutorial's maximum question length (LSTM time steps) and vector size.
MAX_QUESTION_LENGTH = 30
NUM_ANSWERS = 1000  # the tutorial's top-K answers kept as classes (`vqa prepare --num-answers`)
WORD_VECTOR_DIM = 300
IMAGE_FEATURE_DIM = 4096
NUM_ANSWERS_PER_QUESTION = 10
ANSWER_TYPES = ("yes/no", "number", "other")

# preprocessed/: the tutorial's text files and everything the trainers need, as arrays
# (schema, writer and readers in vqa.prepared).
PREPARED_H5 = "vqa_data.h5"

# A model directory, self-contained for inference.
MODEL_FILE = "model.keras"
CONFIG_JSON = "config.json"
VOCABULARY_JSON = "vocabulary.json"
ANSWERS_JSON = "answers.json"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
BEST_MODEL_FILE = "best.keras"
BACKUP_DIR = "backup"

# Default locations (relative to the working directory), as in the tutorial.
DEFAULT_LOGDIR = "./Graph"

# vqa features: Karpathy's coco.zip inputs; the features file (schema, writer and reader in vqa.feature_file).
KARPATHY_DIR = "coco"
KARPATHY_FEATS_MAT = "vgg_feats.mat"
KARPATHY_DATASET_JSON = "dataset.json"
# The features file's layouts (what a model reads) and their sizes.
LAYOUT_VECTOR = "vector"  # features float32 (N, 4096): VGG16 fc7, one vector per image
LAYOUT_GRID = "grid"  # features float16 (N, S, S, 512): VGG16 block5_pool, S = image_size / GRID_STRIDE
GRID_CHANNELS = 512
GRID_STRIDE = 32  # block5_pool's output is 1/32 of the input side (five 2x2 poolings)
DEFAULT_GRID_IMAGE_SIZE = 448  # the SAN paper's input: a 14 x 14 grid
# VGG16 weights by name (`--cnn-weights`; anything else is a local .h5 file); a features file records which.
IMAGENET_WEIGHTS = "imagenet"  # Keras' download: the default for new images
RANDOM_WEIGHTS = "random"  # no download: tests and the demo
NAMED_CNN_WEIGHTS = (IMAGENET_WEIGHTS, RANDOM_WEIGHTS)
FC7_IMAGE_SIZE = 224  # VGG16's fc layers fix the fc7 input at 224 x 224
# Which VGG16 weights made a features file (its identity's kind; config.json and MODEL_CARD.md repeat it).
CNN_KARPATHY = "karpathy-caffe-vgg16"  # Karpathy's vgg_feats.mat: Caffe's VGG16, no weights file here
CNN_KERAS_IMAGENET = "keras-imagenet-vgg16"  # Keras' ImageNet file (downloaded, or a local copy of it)
CNN_LOCAL = "local"  # any other local .h5 file, told apart by its SHA-256
CNN_RANDOM = RANDOM_WEIGHTS  # seeded random weights: tests and demos
CNN_UNKNOWN = "unknown"  # not recorded: files and model directories from before the identity existed
CNN_KINDS = (CNN_KARPATHY, CNN_KERAS_IMAGENET, CNN_LOCAL, CNN_RANDOM, CNN_UNKNOWN)

# vqa synth: the official VQA v2 file names and COCO image names.
V2_QUESTIONS_JSON = "v2_OpenEnded_mscoco_{split}_questions.json"
V2_ANNOTATIONS_JSON = "v2_mscoco_{split}_annotations.json"
V1_QUESTIONS_JSON = "OpenEnded_mscoco_{split}_questions.json"
V1_ANNOTATIONS_JSON = "mscoco_{split}_annotations.json"
IMAGES_DIR = "images"
COCO_IMAGE_FILE = "COCO_{split}_{image_id:012d}.jpg"

# `vqa evaluate --model`: written next to the results file (the report JSON goes where --report says).
EVALUATION_TEXT = "evaluation_{split}.txt"
QUESTION_TYPE_CHART_PNG = "accuracy_per_question_type_{split}.png"
ERROR_ANALYSIS_TSV = "error_analysis_{split}.tsv"
