"""Local fakes of outside services (a provider API) that tests serve over real HTTP."""
