"""Controls for the paper's constructed sets (stages.py; the report's section: section.py). The builders are the
library's: construct.build_shortcut_dataset, construct.class_patterns, construct.relabel_targets("rand_no_true")
and construct.build_inverted_dataset(start="noise")."""
