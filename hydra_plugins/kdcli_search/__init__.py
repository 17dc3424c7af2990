"""kdcli's Optuna sweeper for Hydra (`hydra/sweeper=optuna`). `hydra_plugins` is a namespace
package: Hydra instantiates plugins only from it, and imports every module in it on every run,
so this package imports nothing heavy; the work is done in kdcli/search."""
