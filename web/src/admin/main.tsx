import { render } from "preact";
import { AdminApp } from "./console";
import "../style.css";
import "./admin.css";

render(<AdminApp />, document.getElementById("app")!);
