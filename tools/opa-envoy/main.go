// Command opa-envoy is the benchmark's OPA-Envoy ext_authz server: Envoy's
// envoy.service.auth.v3.Authorization/Check answered by OPA's own Go packages (pinned
// github.com/open-policy-agent/opa v1.22.2), the way the OPA-Envoy plugin answers it:
// the CheckRequest becomes `input` through protojson (plus parsed_path and parsed_query),
// a prepared query is evaluated against the in-memory store with OPA's inter-query value
// cache (which keeps io.jwt.decode_verify results, as the OPA runtime does by default), and
// a boolean or an {allowed, headers, http_status, body} object becomes the CheckResponse.
//
// The plugin's own module (github.com/open-policy-agent/opa-envoy-plugin) is not served by
// the Go module proxy these machines can reach, so this is written against OPA itself.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/cache"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
)

type server struct {
	authv3.UnimplementedAuthorizationServer
	store      storage.Store
	query      rego.PreparedEvalQuery
	valueCache cache.InterQueryValueCache
	builtins   cache.InterQueryCache
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9191", "listen address: host:port or unix:/path")
	policy := flag.String("policy", "", "Rego file or directory (and data.json files) to load")
	query := flag.String("query", "data.envoy.authz.allow", "the decision to evaluate")
	flag.Parse()
	if *policy == "" {
		log.Fatal("opa-envoy: -policy is required")
	}
	ctx := context.Background()
	srv, err := newServer(ctx, *policy, *query)
	if err != nil {
		log.Fatalf("opa-envoy: %v", err)
	}
	network, address := "tcp", *addr
	if strings.HasPrefix(address, "unix:") {
		network, address = "unix", strings.TrimPrefix(address, "unix:")
		_ = os.Remove(address)
	}
	lis, err := net.Listen(network, address)
	if err != nil {
		log.Fatalf("opa-envoy: listen %s: %v", *addr, err)
	}
	grpcServer := grpc.NewServer()
	authv3.RegisterAuthorizationServer(grpcServer, srv)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		grpcServer.GracefulStop()
	}()
	log.Printf("opa-envoy: serving %s on %s", *query, *addr)
	if err := grpcServer.Serve(lis); err != nil {
		log.Fatalf("opa-envoy: %v", err)
	}
}

func newServer(ctx context.Context, policyPath, query string) (*server, error) {
	loaded, err := loader.NewFileLoader().All([]string{policyPath})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", policyPath, err)
	}
	store := inmem.NewFromObject(loaded.Documents)
	config, err := cache.ParseCachingConfig(nil)
	if err != nil {
		return nil, err
	}
	options := []func(*rego.Rego){rego.Query(query), rego.Store(store)}
	for name, module := range loaded.ParsedModules() {
		options = append(options, rego.ParsedModule(module))
		_ = name
	}
	prepared, err := rego.New(options...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", query, err)
	}
	return &server{
		store:      store,
		query:      prepared,
		valueCache: cache.NewInterQueryValueCache(ctx, config),
		builtins:   cache.NewInterQueryCache(config),
	}, nil
}

// Check turns the request into input, evaluates the decision and answers Envoy.
func (s *server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	input, err := requestToInput(req)
	if err != nil {
		return nil, err
	}
	value, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, err
	}
	txn, err := s.store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer s.store.Abort(ctx, txn)
	results, err := s.query.Eval(ctx,
		rego.EvalParsedInput(value),
		rego.EvalTransaction(txn),
		rego.EvalInterQueryBuiltinCache(s.builtins),
		rego.EvalInterQueryBuiltinValueCache(s.valueCache),
	)
	if err != nil {
		return nil, err
	}
	var decision any = false
	if len(results) > 0 && len(results[0].Expressions) > 0 {
		decision = results[0].Expressions[0].Value
	}
	return toResponse(decision), nil
}

func requestToInput(req *authv3.CheckRequest) (map[string]any, error) {
	raw, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	var input map[string]any
	if err := json.Unmarshal(raw, &input); err != nil {
		return nil, err
	}
	path := req.GetAttributes().GetRequest().GetHttp().GetPath()
	parsed, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", path, err)
	}
	segments := []any{}
	for _, segment := range strings.Split(strings.TrimLeft(parsed.Path, "/"), "/") {
		segments = append(segments, segment)
	}
	query := map[string]any{}
	for key, values := range parsed.Query() {
		list := make([]any, len(values))
		for i, v := range values {
			list[i] = v
		}
		query[key] = list
	}
	input["parsed_path"] = segments
	input["parsed_query"] = query
	input["parsed_body"] = nil
	input["truncated_body"] = false
	input["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	return input, nil
}

func toResponse(decision any) *authv3.CheckResponse {
	allowed, headers, status, body := false, map[string]any{}, 403, ""
	switch d := decision.(type) {
	case bool:
		allowed = d
	case map[string]any:
		allowed, _ = d["allowed"].(bool)
		if h, ok := d["headers"].(map[string]any); ok {
			headers = h
		}
		if n, ok := d["http_status"].(json.Number); ok {
			if v, err := n.Int64(); err == nil {
				status = int(v)
			}
		}
		body, _ = d["body"].(string)
	}
	options := make([]*corev3.HeaderValueOption, 0, len(headers))
	for key, value := range headers {
		text, _ := value.(string)
		options = append(options, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: key, Value: text},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	if allowed {
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: options}},
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: options,
			Body:    body,
		}},
	}
}
