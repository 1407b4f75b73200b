import Proxy
import Foundation
import NIOCore
import Testing
import Config

@Suite("Request rewriting")
struct BodyRewriteTests {
    func rewrite(_ body: String, _ rule: BodyRewrite) -> String {
        String(buffer: rule.apply(to: ByteBuffer(string: body)))
    }

    @Test("a body that names none of the fields passes byte for byte")
    func untouched() {
        let body = "{ \"model\" : \"m\",\n  \"messages\":[{\"role\":\"user\",\"content\":\"a, b } c\"}] , \"n\": 1e3 }"
        let rule = BodyRewrite(strip: ["temperature"], set: [:], defaults: [:])
        #expect(rewrite(body, rule) == body)
        #expect(rewrite("not json", BodyRewrite(strip: ["x"])) == "not json")
        #expect(rewrite("[1,2]", BodyRewrite(set: ["a": "1"])) == "[1,2]")
    }

    @Test("strip, set, default and model name touch only their members", arguments: [
        (#"{"model":"m","temperature":0.9,"top_p":1}"#, BodyRewrite(strip: ["temperature"]), #"{"model":"m","top_p":1}"#),
        (#"{"temperature":0.9,"model":"m"}"#, BodyRewrite(strip: ["temperature"]), #"{"model":"m"}"#),
        (#"{"model":"m","temperature":0.9}"#, BodyRewrite(strip: ["temperature"]), #"{"model":"m"}"#),
        (#"{"temperature":0.9}"#, BodyRewrite(strip: ["temperature"]), #"{}"#),
        (#"{"model":"m","temperature":0.9}"#, BodyRewrite(set: ["temperature": "0.2"]), #"{"model":"m","temperature":0.2}"#),
        (#"{"model":"m"}"#, BodyRewrite(set: ["temperature": "0.2"]), #"{"model":"m","temperature":0.2}"#),
        (#"{"model":"m","seed":7}"#, BodyRewrite(defaults: ["seed": "1"]), #"{"model":"m","seed":7}"#),
        (#"{"model":"m"}"#, BodyRewrite(defaults: ["seed": "1"]), #"{"model":"m","seed":1}"#),
        (#"{}"#, BodyRewrite(defaults: ["seed": "1"]), #"{"seed":1}"#),
        (#"{"model":"alias","x":{"model":"inner"}}"#, BodyRewrite(modelName: "real"), #"{"model":"real","x":{"model":"inner"}}"#),
        (#"{"a":"q\"uote,}","temperature":[1,{"b":"]"}],"c":true}"#, BodyRewrite(strip: ["temperature"]), #"{"a":"q\"uote,}","c":true}"#),
        (#"{ "model" : "m" , "keep" : null }"#, BodyRewrite(set: ["model": #""n""#]), #"{ "model" : "n","keep" : null }"#),
    ])
    func rewrites(body: String, rule: BodyRewrite, expected: String) {
        #expect(rewrite(body, rule) == expected)
    }

    @Test("the config reads strip_params, set_params (any YAML value), default_params and use_model_name")
    func config() throws {
        let config = try ClusterConfig.parse("""
            workers:
              - name: w
                models:
                  - name: m
                    path: p
                    strip_params: [logit_bias]
                    set_params: {temperature: 0.2, stop: ["END", 3], json: {a: true}}
                    default_params: {seed: 42}
                    use_model_name: qwen
            """)
        let rewrite = config.workers[0].models[0].rewrite
        #expect(rewrite.strip == ["logit_bias"])
        #expect(rewrite.set["temperature"] == "0.2" && rewrite.set["json"] == #"{"a":true}"#)
        #expect(rewrite.set["stop"] == #"["END",3]"#, "\(rewrite.set)")
        #expect(rewrite.defaults == ["seed": "42"] && rewrite.modelName == "qwen")
    }
}
