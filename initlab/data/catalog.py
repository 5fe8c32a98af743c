"""The fallback dataset entry: any TFDS catalog name, read as image classification.

`config.data` fields it reads (None = default):
  data_dir:    root directory holding the prepared dataset (`sources.data_source`).
  image_key:   feature holding the image, default 'image'.
  label_key:   feature holding the ClassLabel, default 'label'.
  image_scale: pixel multiplier, default 1/255.
"""

from initlab.data import pipeline
from initlab.data import registry
from initlab.data import sources


def image_split(source, transform: pipeline.ImageTransform) -> registry.Split:
  """A classification `Split` of a TFDS data source; shapes from its features."""
  features = source.dataset_info.features
  return registry.Split(
    source,
    transform,
    tuple(features[transform.image_key].shape),
    num_classes=features[transform.label_key].num_classes,
  )


@registry.register_dataset(registry.CATALOG, task='classification')
def open_split(cfg, split: str) -> registry.Split:
  name = cfg['name']
  source = sources.data_source(name, split, registry.option(cfg, 'data_dir'))
  transform = pipeline.ImageTransform(
    image_key=registry.option(cfg, 'image_key', 'image'),
    label_key=registry.option(cfg, 'label_key', 'label'),
    scale=registry.option(cfg, 'image_scale', 1 / 255),
  )
  features = source.dataset_info.features
  for field, key in (('image_key', transform.image_key), ('label_key', transform.label_key)):
    if key not in features:
      raise ValueError(
        f'data.{field}={key!r} is not a feature of data.name={name!r}; features: {list(features)}.'
      )
  return image_split(source, transform)
