"""Networks: the target families (VGG-16, IR-152 and their smaller members per scale), dlib's face embedding, the
evaluation classifier on it, and (with the attacks) the generative priors."""
from .classifiers import (ARCHITECTURES, FAMILIES, IRNet, ResNet, VGG16BN, build_model, count_parameters, ir152,
                          resnet152, vgg16_bn)
from .embedding import EMBEDDING_DIM, DlibEmbedder
from .evaluator import EvaluationClassifier

__all__ = ["ARCHITECTURES", "FAMILIES", "IRNet", "ResNet", "VGG16BN", "build_model", "count_parameters", "ir152",
           "resnet152", "vgg16_bn", "EMBEDDING_DIM", "DlibEmbedder", "EvaluationClassifier"]
