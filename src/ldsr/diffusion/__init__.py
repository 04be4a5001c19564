"""Diffusion core: noise schedules (`schedules`), the training objective (`objective`) and samplers
(`sampling`), network-agnostic. This package file imports nothing heavy: `ldsr --help` reads `names`."""
