"""DataModules for the built-in tasks: in-code synthetic data, image folders, CSV/JSONL text files,
language-modeling text (tokenized once, packed).

Each exposes ``num_classes`` so ``flashdist fit`` can check it against the model's before launch.
"""

from flashdist.data.image_folder import ImageFolderDataModule
from flashdist.data.language_modeling import LanguageModelingDataModule
from flashdist.data.synthetic import SyntheticImageDataModule, SyntheticTextDataModule
from flashdist.data.text_files import TextFileDataModule
from flashdist.data.tokenizer import HashingTokenizer

__all__ = [
    "HashingTokenizer",
    "ImageFolderDataModule",
    "LanguageModelingDataModule",
    "SyntheticImageDataModule",
    "SyntheticTextDataModule",
    "TextFileDataModule",
]
