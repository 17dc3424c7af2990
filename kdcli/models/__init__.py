"""Models. Every config in `configs/model/` is a `_target_` that takes the dataset's facts
(`num_classes`, `in_channels`, `image_size`); kdcli.config.build.build_model passes them, so
configs never hard-code them."""
