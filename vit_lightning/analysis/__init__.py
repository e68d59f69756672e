"""Looking at runs: reading them back (`runs`), pictures (`viz`), and the notebooks' helpers
(`tutorial`)."""
