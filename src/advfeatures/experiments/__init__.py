"""The experiments `reproduce` runs, one package each: its stages, its report section, and any library code only it
uses, side by side.

    sources/        D and D_adv: trained, or given checkpoints (--standard-model / --robust-model)
    figure2/        the paper's constructed sets (D_R, D_NR, D_rand, D_det), standard training on each, controls
    attack_check/   the default evaluation against an attack of another family (AutoAttack where installed)
    transfer/       Figure 3: transfer rate vs accuracy after D_det, over architectures
    robust_source/  Table 9: D_rand / D_det built against the robust model
    followups/      the Distill discussion's experiments (Nakkiran, Goh, Wallace)
    controls/       --controls: shortcut D_rand / D_det without any model (Keller Jordan), D_rand without
                    correctly labelled images, D_R / D_NR from noise
    theory/         Section 4 (the library is advfeatures.theory)

In each, stages.py declares its stages (runfolder.Stage: a body, the settings it reads, the stages it builds on)
and section.py turns a preset's results into report blocks (document.py) without importing any stage: the report
reads results, not stages. context.py is what every stage body gets (PresetRun); verdicts.py
how a section's claims count the seeds that agree. pipeline.py lists the stages in
the order they run; report.py lists the sections in the order they print.

Adding an experiment: a package here with a stages.py (bodies and declarations) and a section.py, one line in
pipeline.STAGES and one in report.SECTIONS.
"""
