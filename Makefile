# pgcloak — the two commands that matter:
#   make demo   throwaway PostgreSQL + SoftHSM token + proxy, and a visible round trip
#   make test   unit + integration tests (real PostgreSQL, SoftHSM2, psql, pgbench, pgx), with -race
GO        ?= go
BIN       ?= bin/pgcloak
PKGS      ?= ./...
TESTFLAGS ?=
STATICCHECK_VERSION ?= v0.6.1

.PHONY: all build deps test test-short check fmt vet staticcheck demo dev bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pgcloak

# System packages (PostgreSQL server/client, pgbench, softhsm2, opensc, pgbouncer), idempotent.
deps:
	@bash scripts/install-deps.sh

test: deps
	$(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) $(PKGS)

# Unit tests only (no PostgreSQL, no HSM).
test-short:
	$(GO) test -short -count=1 $(TESTFLAGS) $(PKGS)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

check: fmt vet staticcheck test

demo: deps
	$(GO) run ./cmd/pgcloak dev --demo --port 0

dev: deps
	$(GO) run ./cmd/pgcloak dev

# Interleaved pgbench: direct vs PgBouncer vs pgcloak (pass-through), two
# encrypted columns vs plaintext through pgcloak, then a key rotation +
# re-encryption + retirement behind live traffic (-rotation=false skips it).
# Results in bench/results/.
# Smoke: make bench BENCHFLAGS="-rounds 1 -duration 3s -clients 8 -workloads enc-prepared,plain-prepared -rotation=false"
# Rotation alone: make bench BENCHFLAGS="-workloads none -rotation-duration 40s"
BENCHFLAGS ?=
bench: deps build
	$(GO) run ./bench/cmd/pgbench-compare --pgcloak $(BIN) $(BENCHFLAGS)

clean:
	rm -rf bin
