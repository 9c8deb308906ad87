# livedump build entry points. `make help` lists them.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/livedump/livedump/internal/version.Version=$(VERSION)
GOBIN     := $(shell $(GO) env GOPATH)/bin
BUF       := $(GOBIN)/buf

# Code generators, pinned so `make proto` is reproducible.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: help build windows test proto proto-check tools vet dev msi wine-e2e

help:
	@echo "make build        build livedump-controller, livedump-agent, livedumpctl into bin/"
	@echo "make windows      cross-build the Windows agent and CLI into bin/windows/"
	@echo "make test         run the tests (same command as the README)"
	@echo "make proto        regenerate proto/livedump/v1/*.pb.go with buf"
	@echo "make proto-check  buf lint, and fail if generated code is stale"
	@echo "make dev          run the dev controller with 3 simulated agents"
	@echo "make msi          build bin/windows/livedump-agent.exe and its MSI (VERSION=1.2.3; SIGN_CERT=… SIGN_KEY=… to sign)"
	@echo "make wine-e2e     install the MSI under Wine and enroll with a local controller (.ci/wine-e2e)"

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

windows:
	GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/windows/ ./cmd/livedump-agent ./cmd/livedumpctl

test:
	$(GO) test ./...

vet:
	$(GO) vet ./...
	GOOS=windows GOARCH=amd64 $(GO) vet ./...

tools:
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto:
	PATH="$(GOBIN):$$PATH" $(BUF) generate

proto-check:
	PATH="$(GOBIN):$$PATH" $(BUF) lint
	PATH="$(GOBIN):$$PATH" $(BUF) generate
	@git diff --exit-code -- proto/ || { echo "generated code in proto/ is stale: run make proto and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto/)" || { git status --porcelain -- proto/; echo "untracked generated files in proto/"; exit 1; }

dev:
	$(GO) run ./cmd/livedump-controller --dev

# The agent MSI (deploy/msi/build): the exe is stamped with VERSION, the MSI
# gets the same version (X.Y.Z; see the script for non-release VERSIONs).
# Signs the exe, then the MSI, when SIGN_CERT and SIGN_KEY are given.
msi:
	GO='$(GO)' VERSION='$(VERSION)' MSI_VERSION='$(MSI_VERSION)' SIGN_CERT='$(SIGN_CERT)' SIGN_KEY='$(SIGN_KEY)' deploy/msi/build

wine-e2e: build
	.ci/wine-e2e
