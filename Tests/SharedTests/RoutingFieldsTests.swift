import HTTPTypes
import NIOCore
import Testing

@testable import Shared

@Suite("Routing fields")
struct RoutingFieldsTests {
    @Test("model and stream are read, the rest ignored")
    func valid() throws {
        let fields = try RoutingFields.parse(ByteBuffer(string: #"{"messages":[{"x":1}],"model":"m","stream":true}"#))
        #expect(fields == RoutingFields(model: "m", stream: true))
        #expect(try RoutingFields.parse(ByteBuffer(string: #"{"model":"m"}"#)).stream == false)
    }

    @Test("bad bodies are 400 with a precise code", arguments: [
        ("", "invalid_json"), ("{bad", "invalid_json"), ("[1,2]", "invalid_json"), ("\"str\"", "invalid_json"),
        ("{}", "missing_model"), (#"{"model":null}"#, "missing_model"), (#"{"model":5}"#, "invalid_model"),
        (#"{"model":""}"#, "invalid_model"), (#"{"model":["a"]}"#, "invalid_model"),
    ])
    func invalid(body: String, code: String) {
        #expect(throws: OpenAIError.self) { try RoutingFields.parse(ByteBuffer(string: body)) }
        do {
            _ = try RoutingFields.parse(ByteBuffer(string: body))
        } catch {
            #expect(error.status.code == 400)
            #expect(error.code == code)
            #expect(error.type == "invalid_request_error")
        }
    }

    @Test("a body that is not UTF-8 is rejected")
    func notUTF8() {
        #expect(throws: OpenAIError.self) {
            try RoutingFields.parse(ByteBuffer(bytes: [0x7B, 0x22, 0x6D, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]))
        }
    }

    @Test("the envelope has message, type and code")
    func envelope() throws {
        let error = OpenAIError.modelNotFound("x")
        let json = try JSONSerialization.jsonObject(with: error.body) as? [String: [String: String]]
        #expect(json?["error"]?["code"] == "model_not_found")
        #expect(json?["error"]?["type"] == "invalid_request_error")
        #expect(json?["error"]?["message"]?.contains("'x'") == true)
        #expect(String(buffer: error.sseEvent).hasPrefix("data: {\"error\":"))
    }
}

import Foundation

@Suite("Forwarded headers")
struct HTTPForwardingTests {
    @Test("a client cannot set the hub's own headers, credentials or hop-by-hop headers upstream")
    func requestHeaders() {
        let fields: HTTPFields = [
            .authorization: "Bearer client", .contentType: "application/json", .connection: "close",
            HTTPField.Name("X-Caravan-Model")!: "other-model", HTTPField.Name("X-Caravan-Stream")!: "true",
            HTTPField.Name("Cookie")!: "c=1", HTTPField.Name("X-Request-Id")!: "r1",
        ]
        let forwarded = HTTPForwarding.requestHeaders(fields)
        #expect(forwarded.map(\.0).map { $0.lowercased() }.sorted() == ["content-type", "x-request-id"])
    }
}
