// Command smoke drives a running Clarion through the generated Go client, over gRPC straight to the server and over
// gRPC through Envoy, and prints one JSON line per step for tests/clients/test_go_client.py to check. It reports what
// it saw and leaves the judging to the test; it exits non-zero only when a call that should work fails.
//
//	CLARION_API_KEY=$(cat .clarion/api-key) smoke -grpc 127.0.0.1:50051 -envoy 127.0.0.1:8080
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	clarionv1 "github.com/clarion-notify/clarion/gen/go/clarion/v1"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// gRPC has no default deadline; every call gets this one.
const callTimeout = 10 * time.Second

// record is one JSON line of output.
type record map[string]interface{}

func emit(r record) {
	line, err := json.Marshal(r)
	if err != nil {
		panic(err) // only strings, numbers, booleans and lists of strings go in
	}
	fmt.Println(string(line))
}

// session is one connection and the identity every step on it shares.
type session struct {
	via           string // "grpc-direct" or "grpc-envoy", in every record
	run           string // unique per run, so that keys and emails never collide with an earlier run's
	apiKey        string
	users         clarionv1.UserServiceClient
	templates     clarionv1.TemplateServiceClient
	notifications clarionv1.NotificationServiceClient
}

// call is a context for one RPC: its deadline, and the API key unless withKey is false.
func (s *session) call(withKey bool, extra ...string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	if withKey {
		extra = append(extra, "authorization", "Bearer "+s.apiKey)
	}
	return metadata.AppendToOutgoingContext(ctx, extra...), cancel
}

func (s *session) emit(step string, r record) {
	r["via"], r["step"] = s.via, step
	emit(r)
}

// suffix is the run id and the transport, e.g. "1a2b3c4d-grpc-envoy".
func (s *session) suffix() string { return s.run + "-" + s.via }

func (s *session) idempotencyKey() string { return "go-digest-" + s.suffix() }

// The README's seed user: an email address, a phone number and preferences with quiet hours.
func (s *session) createUser() (*clarionv1.User, error) {
	ctx, cancel := s.call(true)
	defer cancel()
	enabled := true
	return s.users.CreateUser(ctx, &clarionv1.CreateUserRequest{User: &clarionv1.User{
		EmailAddress:      "go-" + s.suffix() + "@example.com",
		PhoneNumber:       "+1234567890",
		PreferredLanguage: "en-US",
		Preferences: &clarionv1.Preferences{
			EmailEnabled:    &enabled,
			PushEnabled:     &enabled,
			QuietHoursStart: "22:00",
			QuietHoursEnd:   "08:00",
		},
	}})
}

// The README's WEEKLY_DIGEST email content, under a key of this run's own.
func (s *session) createTemplate() (*clarionv1.Template, error) {
	ctx, cancel := s.call(true)
	defer cancel()
	key := strings.ToUpper(strings.ReplaceAll("GO_DIGEST_"+s.suffix(), "-", "_"))
	return s.templates.CreateTemplate(ctx, &clarionv1.CreateTemplateRequest{Template: &clarionv1.Template{
		TemplateKey: key,
		Subject:     "Your Weekly {app_name} Digest: {new_updates} new items!",
		Body:        "Check out your latest activity. See summary: {digest_link}",
		HtmlBody:    `<h3>Weekly Summary</h3><p>You have {new_updates} new items. <a href="{digest_link}">View Digest</a></p>`,
	}})
}

// send sends the digest with the idempotency key in the `x-idempotency-key` metadata, as the REST edge's header
// arrives; the request's own `request_id` field is the other way to give it.
func (s *session) send(user *clarionv1.User, template *clarionv1.Template) (*clarionv1.SendNotificationResponse, error) {
	data, err := structpb.NewStruct(map[string]interface{}{
		"app_name": "MyApp", "new_updates": 10, "digest_link": "https://example.com/digest",
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.call(true, "x-idempotency-key", s.idempotencyKey())
	defer cancel()
	return s.notifications.SendNotification(ctx, &clarionv1.SendNotificationRequest{
		UserId:      user.GetUserId(),
		TemplateKey: template.GetTemplateKey(),
		MessageData: data,
		// The seed user's quiet hours would hold a normal send.
		Priority: clarionv1.Priority_PRIORITY_CRITICAL,
	})
}

func (s *session) get(notificationID string, withKey bool) (*clarionv1.Notification, error) {
	ctx, cancel := s.call(withKey)
	defer cancel()
	return s.notifications.GetNotification(ctx, &clarionv1.GetNotificationRequest{NotificationId: notificationID})
}

// createBadUser sends an invalid email address, with a request id of its own to find in the error's RequestInfo.
func (s *session) createBadUser() error {
	ctx, cancel := s.call(true, "x-request-id", "go-bad-"+s.suffix())
	defer cancel()
	_, err := s.users.CreateUser(ctx, &clarionv1.CreateUserRequest{User: &clarionv1.User{EmailAddress: "not-an-email"}})
	return err
}

// refusal describes an RPC error from its google.rpc.Status: the code by its canonical name (INVALID_ARGUMENT, as
// the other clients print it), and what its ErrorInfo, BadRequest and RequestInfo details say.
func refusal(err error) record {
	if err == nil {
		return record{"code": "OK"}
	}
	st, ok := status.FromError(err)
	if !ok {
		return record{"code": "NOT_A_STATUS", "message": err.Error()}
	}
	r := record{"code": code.Code(st.Code()).String(), "message": st.Message(), "fields": []string{}}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			fields := []string{}
			for _, violation := range d.GetFieldViolations() {
				fields = append(fields, violation.GetField())
			}
			r["fields"] = fields
		case *errdetails.ErrorInfo:
			r["reason"] = d.GetReason()
		case *errdetails.RequestInfo:
			r["request_id"] = d.GetRequestId()
		case error:
			// Details() returns the decoding error in place of a detail it cannot decode.
			r["undecoded"] = d.Error()
		}
	}
	return r
}

func (s *session) smoke() error {
	user, err := s.createUser()
	if err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	s.emit("create_user", record{"user_id": user.GetUserId(), "email_address": user.GetEmailAddress()})

	template, err := s.createTemplate()
	if err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	s.emit("create_template", record{
		"template_key": template.GetTemplateKey(), "version": template.GetVersion(), "channels": channels(template),
	})

	first, err := s.send(user, template)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	s.emit("send", sent(first, s.idempotencyKey()))
	again, err := s.send(user, template)
	if err != nil {
		return fmt.Errorf("send again: %w", err)
	}
	s.emit("send_again", sent(again, s.idempotencyKey()))

	notification, err := s.get(first.GetNotification().GetNotificationId(), true)
	if err != nil {
		return fmt.Errorf("get notification: %w", err)
	}
	s.emit("get", record{
		"notification_id": notification.GetNotificationId(),
		"user_id":         notification.GetUserId(),
		"template_key":    notification.GetTemplateKey(),
		"request_id":      notification.GetRequestId(),
		"status":          notification.GetStatus().String(),
	})

	s.emit("bad_request", refusal(s.createBadUser()))
	_, err = s.get(first.GetNotification().GetNotificationId(), false)
	s.emit("without_key", refusal(err))
	return nil
}

func sent(response *clarionv1.SendNotificationResponse, idempotencyKey string) record {
	n := response.GetNotification()
	return record{
		"idempotency_key": idempotencyKey,
		"notification_id": n.GetNotificationId(),
		"status":          n.GetStatus().String(),
		"request_id":      n.GetRequestId(),
		"replayed":        response.GetReplayed(),
	}
}

func channels(template *clarionv1.Template) []string {
	names := []string{}
	for _, channel := range template.GetChannels() {
		names = append(names, channel.String())
	}
	return names
}

func smoke(via, address, apiKey, run string) error {
	// Plaintext: both addresses are loopback. grpc-go 1.33 (Debian's) predates credentials/insecure.
	conn, err := grpc.Dial(address, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	s := &session{
		via:           via,
		run:           run,
		apiKey:        apiKey,
		users:         clarionv1.NewUserServiceClient(conn),
		templates:     clarionv1.NewTemplateServiceClient(conn),
		notifications: clarionv1.NewNotificationServiceClient(conn),
	}
	return s.smoke()
}

func main() {
	grpcAddress := flag.String("grpc", "127.0.0.1:50051", "host:port of Clarion's gRPC server")
	envoyAddress := flag.String("envoy", "127.0.0.1:8080", "host:port of Envoy, which also serves gRPC")
	flag.Parse()
	// From the environment, not a flag, so that the key does not show in the process list.
	apiKey := os.Getenv("CLARION_API_KEY")
	if apiKey == "" {
		fmt.Fprintln(os.Stderr, "smoke: set CLARION_API_KEY to an API key with the send and manage scopes")
		os.Exit(2)
	}
	random := make([]byte, 4)
	if _, err := rand.Read(random); err != nil {
		panic(err)
	}
	run := hex.EncodeToString(random)

	failed := false
	for _, target := range []struct{ via, address string }{
		{"grpc-direct", *grpcAddress},
		{"grpc-envoy", *envoyAddress},
	} {
		if err := smoke(target.via, target.address, apiKey, run); err != nil {
			fmt.Fprintf(os.Stderr, "smoke: %s (%s): %v\n", target.via, target.address, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
