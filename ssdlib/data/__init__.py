"""Face data: loaders (identity folders, official CelebA layout; archives or folders), 64x64 crops, cached tensors,
private train/valid/test splits and the disjoint public set. See ``data/README.md`` for layouts, sizes and crops."""
from .crops import (CELEBA_CROP, CELEBA_EYES_64, FULL_FRAME, LFW_CROP, LFW_FRAME_EYES, EyeStats, check_box,
                    crop_resize, decode_crop, fit_crop, map_to_crop, measure_eye_positions, predictor_path)
from .faceset import FaceDataset, FaceSet, augment
from .sources import (DEFAULT_CROPS, Source, find_source, load_celeba, load_faces, load_identity_folders,
                      load_source, measure_crop_alignment, sample_frames)
from .splits import (DEFAULT_MAX_PER_IDENTITY, PrivateData, check_disjoint, private_identities, private_split,
                     public_set)

__all__ = [
    "FaceSet", "FaceDataset", "PrivateData", "Source", "EyeStats", "augment",
    "load_faces", "load_source", "load_identity_folders", "load_celeba", "find_source", "sample_frames", "measure_crop_alignment",
    "private_split", "public_set", "private_identities", "check_disjoint",
    "CELEBA_CROP", "LFW_CROP", "FULL_FRAME", "DEFAULT_CROPS", "DEFAULT_MAX_PER_IDENTITY",
    "CELEBA_EYES_64", "LFW_FRAME_EYES",
    "check_box", "crop_resize", "decode_crop", "fit_crop", "map_to_crop", "measure_eye_positions", "predictor_path",
]
